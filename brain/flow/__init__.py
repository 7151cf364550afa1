"""The durable message flow on Redis: intake and stream records, ordered consumers,
brain workers, reply senders and the notices for the staff desk."""
