"""The operator queries of DESIGN §6, verbatim; they must run on SQLite and PostgreSQL."""

OPERATOR_QUERIES: dict[str, str] = {
    "Active model prices": """SELECT model_name, cost_per_1k_input, cost_per_1k_output, credits_per_image
FROM igny8_billing_aimodelconfig WHERE is_active = true;""",
    "Image AI task logs": """SELECT function_name, COUNT(*) as count, SUM(cost) as total_cost
FROM igny8_ai_task_logs WHERE function_name = 'generate_images' GROUP BY function_name;""",
    "Image usage logs": """SELECT operation_type, COUNT(*) as count, SUM(credits_used) as total_credits, SUM(cost_usd) as total_cost
FROM igny8_billing_creditusagelog WHERE operation_type = 'image_generation' GROUP BY operation_type;""",
    "Image notifications": """SELECT notification_type, COUNT(*) as count
FROM igny8_notifications_notification
WHERE notification_type IN ('ai_image_success', 'ai_image_failed') GROUP BY notification_type;""",
    "Deductions by operation": """SELECT operation_type, COUNT(*) as transactions, SUM(amount) as total_credits
FROM igny8_billing_credittransaction WHERE transaction_type = 'deduction'
GROUP BY operation_type ORDER BY total_credits DESC;""",
}
