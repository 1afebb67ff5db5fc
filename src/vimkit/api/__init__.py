"""HTTP layer: routing, authentication dependencies, problem details, filtering and paging."""
