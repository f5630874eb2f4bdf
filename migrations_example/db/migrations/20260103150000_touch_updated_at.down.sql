DROP TRIGGER orders_touch_updated_at ON orders;
DROP FUNCTION touch_updated_at();
