"""What each DVC stage does, in terms of the library: params in, files out.

One module per stage (family), so that each stage's DVC dependencies are the files its entry imports
and nothing else: `stages/<stage>.py` is a thin command line around `run_<stage>` here; `layout` owns
the paths and run names they share. This file imports nothing, so that importing one stage's module
does not pull in the others.
"""
