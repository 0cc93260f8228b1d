"""leadscore: ML lead scoring and qualification from closed-loop CRM outcomes."""

__version__ = "0.1.0"
