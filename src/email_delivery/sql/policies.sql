-- The statements of email_delivery.policies (worker policy per workflow), through SQLAlchemy
-- (named :parameters). Changing a policy is the owner's: nobody else may write the table.

-- name: all
SELECT * FROM email.workflow_policies ORDER BY workflow <> '*', workflow;

-- name: effective
SELECT * FROM email.workflow_policy(:workflow);

-- name: effective_for_update
-- The policy a change starts from, its row locked (the default row when the workflow has
-- none yet: a concurrent first change of the same workflow then meets the upsert's conflict).
SELECT p.* FROM email.workflow_policies AS p
WHERE p.workflow IN (:workflow, '*')
ORDER BY p.workflow = '*'
LIMIT 1
FOR UPDATE;

-- name: upsert
INSERT INTO email.workflow_policies AS p (workflow, max_attempts, lease, backoff_base,
    backoff_cap, backoff_jitter, keep_sent_for, keep_failed_for, alert_queued_age,
    alert_retrying_age, alert_expired_claim_age, alert_dead_letters_per_hour,
    alert_failure_rate, track_engagement, send_despite_suppression, suppress_for)
VALUES (:workflow, :max_attempts, :lease, :backoff_base, :backoff_cap, :backoff_jitter,
    :keep_sent_for, :keep_failed_for, :alert_queued_age, :alert_retrying_age,
    :alert_expired_claim_age, :alert_dead_letters_per_hour, :alert_failure_rate, :track_engagement,
    :send_despite_suppression, :suppress_for)
ON CONFLICT (workflow) DO UPDATE SET
    max_attempts = EXCLUDED.max_attempts, lease = EXCLUDED.lease,
    backoff_base = EXCLUDED.backoff_base, backoff_cap = EXCLUDED.backoff_cap,
    backoff_jitter = EXCLUDED.backoff_jitter, keep_sent_for = EXCLUDED.keep_sent_for,
    keep_failed_for = EXCLUDED.keep_failed_for, alert_queued_age = EXCLUDED.alert_queued_age,
    alert_retrying_age = EXCLUDED.alert_retrying_age,
    alert_expired_claim_age = EXCLUDED.alert_expired_claim_age,
    alert_dead_letters_per_hour = EXCLUDED.alert_dead_letters_per_hour,
    alert_failure_rate = EXCLUDED.alert_failure_rate,
    track_engagement = EXCLUDED.track_engagement,
    send_despite_suppression = EXCLUDED.send_despite_suppression,
    suppress_for = EXCLUDED.suppress_for
RETURNING p.*;

-- name: reset_default
UPDATE email.workflow_policies SET max_attempts = DEFAULT, lease = DEFAULT,
    backoff_base = DEFAULT, backoff_cap = DEFAULT, backoff_jitter = DEFAULT,
    keep_sent_for = DEFAULT, keep_failed_for = DEFAULT, alert_queued_age = DEFAULT,
    alert_retrying_age = DEFAULT, alert_expired_claim_age = DEFAULT,
    alert_dead_letters_per_hour = DEFAULT, alert_failure_rate = DEFAULT,
    track_engagement = DEFAULT, send_despite_suppression = DEFAULT, suppress_for = DEFAULT
WHERE workflow = '*';

-- name: delete
DELETE FROM email.workflow_policies WHERE workflow = :workflow;

-- name: changes
SELECT id, workflow, action, before, after, changed_by, changed_at
FROM email.workflow_policy_changes
WHERE CAST(:workflow AS text) IS NULL OR workflow = :workflow
ORDER BY id DESC
LIMIT :limit;
