"""Planning, the run store and executors."""

from acbench.engine.plan import Job, plan
from acbench.engine.runner import StudyResult, run_study
from acbench.engine.store import RunStore

__all__ = ["Job", "RunStore", "StudyResult", "plan", "run_study"]
