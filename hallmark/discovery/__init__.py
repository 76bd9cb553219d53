"""Discovery: find images by what is inside them (packages, advisories, text) and answer
"which images and workloads does advisory X affect" (hallmark.discovery.advisory)."""
