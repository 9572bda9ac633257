"""Client library of the governance service (HMS-GOV): `PolicyClient.check(request) -> Decision`.

It imports nothing from `edge`, so other services can use it too. The engines
(local rules, the governance gRPC service, OPA) arrive with the governance work.
"""
