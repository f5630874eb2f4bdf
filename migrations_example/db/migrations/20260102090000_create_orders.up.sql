CREATE TYPE order_status AS ENUM ('pending', 'paid', 'shipped', 'cancelled');

CREATE TABLE orders (
    id           bigserial PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    status       order_status NOT NULL DEFAULT 'pending',
    total_cents  integer NOT NULL CHECK (total_cents >= 0),
    note         text, -- free text; may contain ';' or "quotes"
    updated_at   timestamptz NOT NULL DEFAULT now()
);
