"""Where the faces of a run are held and the passes over every face run: :mod:`job.space.faces`."""
