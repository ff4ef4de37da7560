from vss_cli.cli.app import main

main()
