"""Is the store what it should be: verify (schema, indexes, search function, grants, plans,
recall audits and what watch saw), the checks that read EXPLAIN plans (planchecks), and doctor
(what is wrong and exactly how to fix it)."""

__all__ = ["doctor", "planchecks", "verify"]
