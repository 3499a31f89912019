"""DVC stage: the agnostic control, fine-tuned like the aware ISPs with lambda_comp = 0."""
from caisp.pipeline import run_finetune
from stages._entry import main


def run_finetune_agnostic(p):
    """Fine-tune the pretrained ISP-Net for the same steps with L_isp only."""
    return run_finetune(p, None, None)


if __name__ == "__main__":
    main(run_finetune_agnostic)
