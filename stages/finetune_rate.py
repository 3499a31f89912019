"""DVC stage: fine-tune the pretrained ISP-Net once per seed with lambda_isp * L_isp + lambda_rate * R / pixels."""
from caisp.pipeline.rate_finetune import run_finetune_rate
from stages._entry import main

if __name__ == "__main__":
    main(run_finetune_rate, args=("regime", "point", "lambda_rate"))
