"""DVC stage: the real codec's file of every target at one operating point, with per-image BPP."""
from caisp.pipeline.encode import run_encode
from stages._entry import main

if __name__ == "__main__":
    main(run_encode, args=("point",))
