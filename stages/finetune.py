"""DVC stage: fine-tune the pretrained ISP-Net once per seed: compression-aware with L_total (CAS frozen
unless --unfrozen), or a control (--control agnostic | identity)."""
from caisp.pipeline import run_finetune
from stages._entry import main

if __name__ == "__main__":
    main(run_finetune, matrix=("qf", "variant", "frozen", "control"))
