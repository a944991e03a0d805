"""An --arch module whose top level fails, as a module that needs a missing GPU does."""

raise RuntimeError("this module needs a GPU to import")
