-- migrate:up
-- Result images are already compressed (PNG, JPEG, WebP): kept uncompressed
-- out of line, a download reads them a slice at a time (substring reads only
-- the TOAST chunks of its slice) instead of decompressing from the start for
-- every slice. Rows written before keep their storage until rewritten.
ALTER TABLE tasks ALTER COLUMN result_image SET STORAGE EXTERNAL;

-- migrate:down
ALTER TABLE tasks ALTER COLUMN result_image SET STORAGE EXTENDED;
