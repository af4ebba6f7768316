"""Thin Python clients for a MedGemma deployment served by vLLM's OpenAI-compatible API.

Data flows one way. Pixels: dicom.py (DICOM -> 8-bit arrays) and images.py (arrays, PIL
images, image files -> PNG/JPEG), with image_input.py above both choosing between them;
messages.py (pure) turns them into OpenAI chat content. A study from a PACS: dicomweb.py
fetches it, series.py chooses and orders a series, windows.py windows its slices, study.py
samples them to the budget and lays them out, study_request.py strings those steps into a
request. chat.py makes the calls through the openai SDK; tasks.py holds the use-case
presets; batch.py runs a folder or a PACS search resumably; __main__.py is the CLI
(`python -m clients --help`).
"""
