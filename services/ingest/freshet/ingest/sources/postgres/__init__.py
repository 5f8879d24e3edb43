"""PostgreSQL CDC over the streaming replication protocol with pgoutput."""
