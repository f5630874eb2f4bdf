-- migrate:up
ALTER TABLE users ADD COLUMN plan text NOT NULL DEFAULT 'free';
COMMENT ON COLUMN users.plan IS 'billing plan; ''free'' until upgraded';

-- migrate:down
ALTER TABLE users DROP COLUMN plan;
