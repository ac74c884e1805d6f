"""edgeferry: builds, scans, gates and rolls out model containers to cloud and K3s edge clusters."""
