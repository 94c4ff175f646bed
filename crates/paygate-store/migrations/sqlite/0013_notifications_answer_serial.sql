-- The platform key that signs a notification's deliveries (the merchant's Wechatpay-Serial at
-- prepay), kept on the row so the outbox does not read and unseal the order for each delivery.
-- '' none was asked for; NULL not recorded (older rows, refunds): the outbox reads the order.
ALTER TABLE notifications ADD COLUMN answer_serial TEXT;
