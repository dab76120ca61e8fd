"""The offline demo: region generator, local servers, the tiny LLaVA-Next."""
