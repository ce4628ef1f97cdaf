"""Runtime plumbing for segstream workers: embedded broker and stream wiring."""
