/* Keep orders.updated_at current; the body is dollar-quoted, so its ';' do not end the statement. */
CREATE FUNCTION touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    NEW.updated_at := now();
    RAISE DEBUG 'touched row %; status=%', NEW.id, NEW.status;
    RETURN NEW;
END;
$fn$;

CREATE TRIGGER orders_touch_updated_at
    BEFORE UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
