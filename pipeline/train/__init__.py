"""Training around TRL: stage runners, build_model, the fenced TRL surface, monitoring, resume, guards."""
