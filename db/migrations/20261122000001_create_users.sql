-- migrate:up
CREATE TABLE users (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    username      text        NOT NULL,
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_username_key UNIQUE (username),
    CONSTRAINT users_username_length_check
        CHECK (char_length(username) BETWEEN 3 AND 32)
);

COMMENT ON TABLE users IS 'Registered accounts; sessions live in Redis.';
COMMENT ON COLUMN users.password_hash IS 'argon2id encoded hash (argon2-cffi); never the plain password.';

-- migrate:down
DROP TABLE IF EXISTS users;
