"""DVC stage: fine-tune the pretrained ISP-Net once per seed with L_total (CAS frozen unless --unfrozen)."""
from caisp.pipeline.isp import run_finetune
from stages._entry import main

if __name__ == "__main__":
    main(run_finetune, args=("regime", "point", "variant", "unfrozen"))
