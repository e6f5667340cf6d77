-- Why a release's changes could not be read from git (`git = { path, tag }`, SPEC §10): a
-- missing tag or repository is said on the card instead of failing the release.
ALTER TABLE releases ADD COLUMN changes_note TEXT;
