"""DVC stage: fine-tune a control once per seed (agnostic: lambda_comp = 0; identity: g = identity)."""
from caisp.pipeline.isp import run_finetune_control
from stages._entry import main

if __name__ == "__main__":
    main(run_finetune_control, args=("regime", "control"))
