"""DVC stage: compression-aware fine-tuning of the pretrained ISP-Net with L_total (CAS frozen unless --unfrozen)."""
from caisp.pipeline import run_finetune
from stages._entry import main

if __name__ == "__main__":
    main(run_finetune, matrix=("qf", "variant", "frozen"))
