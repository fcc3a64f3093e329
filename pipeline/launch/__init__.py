"""Starting the processes of a run: launcher commands and the self re-launch, the dry run, memory estimate, sweeps."""
