"""recap: a stream's link (or a recording, or its captions) to a YouTube description with chapters.

Its own package: it shares no code with shoal and adds nothing to shoal's install.
"""

__version__ = "0.1.0"
