"""Docker orchestration for job sandboxes. Knows nothing of FastAPI or the DB: it takes plain values."""
