"""DVC stage: pretrain ISP-Net with L_isp only (the compression-agnostic ISP)."""
from caisp.pipeline.isp import run_pretrain_isp
from stages._entry import main

if __name__ == "__main__":
    main(run_pretrain_isp, args=("regime",))
