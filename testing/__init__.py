"""Test and bench infrastructure, never imported by server/: throwaway servers and fakes of third parties."""
