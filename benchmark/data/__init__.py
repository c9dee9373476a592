"""Tasks and data: degradations, readers of IXI / AAPM / paired files, phantoms, prepared datasets.

    python -m benchmark.data prepare mri_sr --src IXI-T2/ --out data/mri     # IXI T2 volumes
    python -m benchmark.data prepare ct_denoise --src AAPM/ --out data/ct    # AAPM patient folders
    python -m benchmark.data prepare pet_synthesis --src pet_pairs/ --out data/pet   # hq/ and lq/ volumes
    python -m benchmark.data prepare phantom-ct --out data/phantom-ct        # no download
    python -m benchmark.data prepare all_in_one --from data/mri data/ct data/pet --out data/all
    python -m benchmark.data info data/mri
"""
