"""vigil's review service (`vigil web`): every alert stored and searchable, its snapshot and clip
served from the frames topic, live camera state, login, signed media links, and the console's pages.

Like every stage it meets the others only through topics and the core (`vigil/`)."""
