"""The staff dashboard at `/dashboard`: figures, content gaps and their draft FAQ entries,
approvals and a redacted conversation viewer, behind a staff login."""
