"""The run engine: what every metered workflow shares (image batches, text batches,
automation runs). A workflow class only orchestrates; these pieces hold the rules.

- `control`: one run status with pause / resume / cancel and the pause reasons;
- `metering`: task log, credit hold, one charge per item, release, notifications;
- `items`: bounded fan-out over a run's items, with continue-as-new as history grows;
- `policies`: timeouts and retry policies of every activity call.
"""
