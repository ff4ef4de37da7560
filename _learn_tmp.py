import sys, time, torch, torch.nn as nn, torch.nn.functional as F
sys.path.insert(0, ".")
from vss_cli.data.synthetic import SyntheticScenes, render_split
from vss_cli.data import transforms as T
from vss_cli.data.specs import SYNTHETIC as S
dev = "cuda" if torch.cuda.is_available() else "cpu"
def block(i,o): return nn.Sequential(nn.Conv2d(i,o,3,padding=1,bias=False),nn.BatchNorm2d(o),nn.ReLU(True),nn.Conv2d(o,o,3,padding=1,bias=False),nn.BatchNorm2d(o),nn.ReLU(True))
class UNet(nn.Module):
    def __init__(s, nc, w=0.25):
        super().__init__(); c=[int(x*w) for x in (64,128,256,512,1024)]
        s.enc=nn.ModuleList([block(3,c[0])]+[block(c[i],c[i+1]) for i in range(4)])
        s.up=nn.ModuleList([nn.ConvTranspose2d(c[i+1],c[i],2,2) for i in range(4)])
        s.dec=nn.ModuleList([block(2*c[i],c[i]) for i in range(4)])
        s.head=nn.Conv2d(c[0],nc,1)
    def forward(s,x):
        f=[]
        for i,e in enumerate(s.enc):
            x=e(x if i==0 else F.max_pool2d(x,2)); f.append(x)
        x=f[-1]
        for i in reversed(range(4)):
            x=s.up[i](x); x=s.dec[i](torch.cat([f[i],x],1))
        return s.head(x)
H,W=S.default_input_size
t=time.time(); render_split(0,"train",320,(H,W)); print("render 320:", round(time.time()-t,2), "s", flush=True)
va=SyntheticScenes("val",transform=T.eval_transform((H,W),S.mean,S.std))
vl=torch.utils.data.DataLoader(va,batch_size=64)
def run(E, scale, seed, w=0.25):
    torch.manual_seed(seed)
    tf=T.Compose([T.RandomScale(*scale,base_size=(H,W)),T.RandomCrop((H,W)),T.RandomHorizontalFlip(),T.ToTensor(),T.Normalize(S.mean,S.std)])
    tr=SyntheticScenes("train",transform=tf)
    g=torch.Generator().manual_seed(seed)
    tl=torch.utils.data.DataLoader(tr,batch_size=16,shuffle=True,drop_last=True,generator=g,num_workers=4,persistent_workers=True)
    m=UNet(S.num_classes,w).to(dev)
    opt=torch.optim.SGD(m.parameters(),lr=0.05,momentum=0.9,weight_decay=1e-4)
    steps=E*len(tl); sched=torch.optim.lr_scheduler.LambdaLR(opt,lambda k:(1-k/steps)**0.9)
    def ev():
        m.eval(); cm=torch.zeros(8,8,dtype=torch.long,device=dev)
        with torch.no_grad():
            for x,y in vl:
                x,y=x.to(dev),y.to(dev); p=m(x).argmax(1); k=y!=255
                cm+=torch.bincount(y[k]*8+p[k],minlength=64).view(8,8)
        m.train(); return (cm.diag()/(cm.sum(0)+cm.sum(1)-cm.diag()).clamp(min=1)).cpu()
    hist=[]
    for e in range(E):
        for x,y in tl:
            x,y=x.to(dev),y.to(dev)
            loss=F.cross_entropy(m(x),y,ignore_index=255); opt.zero_grad(); loss.backward(); opt.step(); sched.step()
        hist.append(round(ev().mean().item(),3))
    iou=ev()
    print(f"E={E} scale={scale} seed={seed} w={w}: mIoU {iou.mean():.3f} per-class", [round(v,2) for v in iou.tolist()], "curve", hist, flush=True)
for cfg in [(12,(0.5,2.0),0),(12,(0.5,2.0),1),(12,(0.75,1.5),0),(30,(0.5,2.0),0),(12,(0.5,2.0),0,0.5)]:
    run(*cfg)
