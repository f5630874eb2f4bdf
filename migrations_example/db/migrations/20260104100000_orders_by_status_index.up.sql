-- Built without locking writes: PostgreSQL runs this outside the release transaction.
CREATE INDEX CONCURRENTLY orders_user_status_idx ON orders (user_id, status);
