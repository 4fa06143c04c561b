CREATE OR REPLACE TRIGGER deliveries_touch_updated_at
    BEFORE UPDATE ON email.deliveries
    FOR EACH ROW
    EXECUTE FUNCTION email.touch_updated_at();
