"""Kopf handlers: thin glue that loads specs, calls decisions, hands effects to adapters."""
