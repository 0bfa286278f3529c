"""`diycnn ui`: the local web app (project folders, uploads, webcam, training, preview, export)."""
