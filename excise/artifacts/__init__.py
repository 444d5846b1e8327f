"""The artifact contract: manifests, masks, scores, validation; what the server reads."""
