"""Test and bench infrastructure: throwaway servers and fakes of third parties (never imported by server/)."""
