from .assigners import *  # noqa: F401,F403
