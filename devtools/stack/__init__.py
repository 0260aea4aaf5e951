"""The whole system on one machine: embedded servers plus the five services."""
