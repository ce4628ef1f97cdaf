"""The pure domain core: no Kafka, faust or Prometheus imports here (a test enforces it)."""
