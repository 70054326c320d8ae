"""Everything between a party and its peers: the relay (server and client), reliable
resumable links, end-to-end sealing, identities and invitations, party sessions, and the
driver that runs protocols over them."""
