"""One function per verb: resolve parents in the store, call engine/pruning, write artifacts, record lineage."""
