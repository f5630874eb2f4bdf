DROP INDEX CONCURRENTLY IF EXISTS orders_user_status_idx;
