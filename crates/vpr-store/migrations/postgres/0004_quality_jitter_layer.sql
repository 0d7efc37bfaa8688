-- Jitter the participant's connections report, and the simulcast layer it
-- receives of the video it watches first.
ALTER TABLE quality ADD COLUMN jitter_ms DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE quality ADD COLUMN video_layer TEXT NOT NULL DEFAULT '';
