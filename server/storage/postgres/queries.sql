-- Every SQL statement of the Postgres repositories, by name.
-- A statement starts at its "-- name: ..." line and runs to the next one.

-- name: insert_user
-- Registers a user; a taken username violates users_username_key.
INSERT INTO users (username, password_hash)
VALUES (%(username)s, %(password_hash)s)
RETURNING id, username, created_at;

-- name: get_user
SELECT id, username, created_at
FROM users
WHERE id = %(id)s;

-- name: get_credentials
SELECT id, password_hash
FROM users
WHERE username = %(username)s;

-- name: delete_user
-- Deletes the user; their tasks go with them (ON DELETE CASCADE).
DELETE FROM users
WHERE id = %(id)s;

-- name: ping
SELECT 1;
