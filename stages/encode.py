"""DVC stage: real JPEG of every target at one QF, with per-image BPP."""
from caisp.pipeline import run_encode
from stages._entry import main

if __name__ == "__main__":
    main(run_encode, matrix=("qf",))
